"""Runs train.py with this machine's CPU split into two logical devices, so `--strategy mirrored`
has two replicas to mirror across, as it would on a machine with two GPUs."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from config import quiet_tensorflow, run_script  # noqa: E402

quiet_tensorflow()

import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from train import main  # noqa: E402

if __name__ == "__main__":
    run_script(main, sys.argv[1:])
