"""ResNet-50 v1.5 model: exact size, v1.5 layout, reference init/BN settings, one full-size train step."""
import numpy as np
import pytest
import tensorflow as tf

from tf_mlperf.core import train_step as train_step_lib
from tf_mlperf.core.distribution import NoDistribution
from tf_mlperf.core.task import InputContext
from tf_mlperf.resnet import model as model_lib
from tf_mlperf.resnet.task import ResNetConfig, ResNetTask


@pytest.fixture(scope="module")
def resnet50():
    return model_lib.resnet50()


def test_trainable_parameter_count_is_exact(resnet50):
    assert sum(int(np.prod(v.shape)) for v in resnet50.trainable_variables) == 25_557_032
    assert len(resnet50.trainable_variables) == 161     # 53 convs + 53 BN (gamma, beta) + fc kernel, bias
    assert resnet50.output_shape == (None, 1000)


def test_v1_5_strides_sit_on_the_3x3_conv(resnet50):
    for stage in (3, 4, 5):
        assert resnet50.get_layer(f"res{stage}a_branch2a").strides == (1, 1)
        assert resnet50.get_layer(f"res{stage}a_branch2b").strides == (2, 2)
        assert resnet50.get_layer(f"res{stage}a_branch1").strides == (2, 2)
    assert resnet50.get_layer("res2a_branch2b").strides == (1, 1)
    assert resnet50.get_layer("conv1").strides == (2, 2)


def test_reference_init_and_batch_norm(resnet50):
    convs = [l for l in resnet50.layers if l.name.startswith("res")]
    assert convs and all(not l.use_bias for l in convs)
    assert resnet50.get_layer("conv1").kernel_initializer.__class__.__name__ == "HeNormal"
    assert resnet50.get_layer("fc1000").kernel_initializer.stddev == 0.01
    bns = [l for l in resnet50.layers if l.name.startswith("bn")]
    assert len(bns) == 53
    assert all(l.momentum == 0.9 and l.epsilon == 1e-5 and l.axis == [3] for l in bns)
    assert all(np.all(l.gamma.numpy() == 1.0) for l in bns)


def test_zero_init_last_gamma_only_on_the_last_bn_of_each_block():
    small = model_lib.resnet50(num_classes=10, image_size=32, width=0.125, zero_init_last_gamma=True)
    for layer in small.layers:
        if layer.name.startswith("bn") and layer.name != "bn_conv1":
            assert np.all(layer.gamma.numpy() == 0.0) == layer.name.endswith("_branch2c"), layer.name


def test_one_full_size_train_step_at_batch_2():
    """The closed-division model and optimizer, through the shared train step, on CPU."""
    task = ResNetTask(ResNetConfig(use_synthetic_data=True, global_batch_size=2))
    model = task.build_model()
    optimizer = task.build_optimizer(model)
    train_step_lib.build_optimizer_state(optimizer, model.trainable_variables)
    # Step 0 of the warmup has lr 0 (as the reference); take a step where lr > 0.
    optimizer.iterations.assign(task.warmup_steps // 2)
    before = [v.numpy().copy() for v in model.trainable_variables]
    batches = iter(task.train_dataset(InputContext(1, 0, 2)))
    step = train_step_lib.make_train_step(task, model, optimizer, NoDistribution(), xla=False)
    loss = float(step(batches, tf.constant(1)))
    assert np.isfinite(loss) and loss > 0
    changed = [not np.array_equal(b, v.numpy()) for b, v in zip(before, model.trainable_variables)]
    assert all(changed)
    assert int(optimizer.iterations.numpy()) == task.warmup_steps // 2 + 1
