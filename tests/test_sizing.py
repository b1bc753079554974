import math

from pipelines.segmentation.sizing import CRF_SCALING_EFFICIENCY, crf_sizing_line


def test_sizing_line_gives_the_cpus_that_keep_the_model_stage_busy():
    # 2 actors at 0.01 s/image: 200 images/s; the CRF takes 0.2 s on average: 40 CPUs at full efficiency.
    line = crf_sizing_line([0.1, 0.2, 0.3], [2, 4, 5], [0.01, 0.01, 0.01], model_actors=2)
    assert "0.200 CPU-s/image median" in line and "2-5 labels kept (median 4)" in line
    assert "200.0 images/s on 2 actors" in line
    assert f"{math.ceil(200 * 0.2 / CRF_SCALING_EFFICIENCY)} CPUs for CRF tasks" in line
    assert crf_sizing_line([], [], [], 1) == ""
