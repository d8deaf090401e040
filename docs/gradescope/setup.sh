#!/usr/bin/env bash
# Gradescope's setup script (runs once, when the autograder image is built). Put it in the
# autograder zip with run_autograder and the torch-svm wheel (`pip wheel --no-deps .` in this
# repository); Gradescope unpacks the zip in /autograder/source.
set -euo pipefail
apt-get update && apt-get install -y python3 python3-pip
pip3 install --index-url https://download.pytorch.org/whl/cpu "torch>=2.1"   # the CPU build
pip3 install /autograder/source/torch_svm-*.whl
pip3 install future          # the assignment's requirements: most solutions import past.builtins
