"""The oracle upper bound: EDSR-baseline trained on pairs made with the target
domain's TRUE degradation. It is the only method told the degradation."""
from __future__ import annotations

from bench.adapter import BenchError, MethodInfo, TrainingData, register_method

from .edsr_bicubic import EDSRTrained


@register_method
class Oracle(EDSRTrained):
    info = MethodInfo(
        name="oracle",
        title="EDSR-baseline trained with the true target degradation (upper bound)",
        citation="Lim et al., CVPRW 2017 (network); pairs from the benchmark's own degradation suites",
        family="baseline",
        scales=(2, 3, 4),
        upper_bound=True,
        # not an official recipe: the harness's bound for its architecture, from the same start
        init_from="edsr-bicubic's network (the shared EDSR warm start), fine-tuned on true pairs",
        notes=("Receives TrainingData.degradation (synthetic domains) or a real set's train pairs (RealSR, DRealSR), which "
               "no other method gets: an upper bound, not a competitor.",),
    )

    def training_suite(self, data: TrainingData):
        if data.degradation is None:
            raise BenchError("oracle needs the target domain's degradation or a real set's train pairs; run it "
                             "with a synthetic target suite or on RealSR/DRealSR with their train split")
        return data.degradation
