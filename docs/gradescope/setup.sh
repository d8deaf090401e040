#!/usr/bin/env bash
# Gradescope's setup script (runs once, when the autograder image is built): install torch-svm
# with the CPU build of PyTorch. Upload it with run_autograder in the autograder zip.
set -euo pipefail
apt-get install -y python3 python3-pip
pip3 install --index-url https://download.pytorch.org/whl/cpu "torch>=2.1"
pip3 install "torch-svm @ git+https://github.com/OWNER/torch-svm"   # or the wheel you ship in the zip
