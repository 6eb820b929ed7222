"""--target_accuracy reaches the real ResNet task (the loop's stop at a given target is tested end to end with
the toy task in test_core_loop.py)."""
import pathlib

from absl import flags

from tf_mlperf.resnet import train  # defines the flags

FLAGS = flags.FLAGS
SMOKE = pathlib.Path(__file__).resolve().parents[1] / "tf_mlperf" / "flags" / "resnet50" / "smoke_cpu.cfg"


def build(*extra):
    FLAGS.unparse_flags()
    FLAGS(["tf-mlperf-resnet-train", f"--flagfile={SMOKE}", "--use_synthetic_data",
           *extra])
    try:
        return train.build_task(FLAGS)
    finally:
        FLAGS.unparse_flags()


def test_target_accuracy_flag_sets_the_resnet_target():
    assert build().target == 0.759
    assert build("--target_accuracy=0.5").target == 0.5
