"""torch-svm: the CS231n multiclass SVM (Weston-Watkins hinge loss) in PyTorch.

The loss with a hand-written gradient (:mod:`torch_svm.losses`), a linear model, data loading
(embedded digits, CIFAR-10), training with ``torch.optim.SGD``, plots and the ``torch-svm``
command line. The checks of that gradient live in the separate ``verification`` package.
"""
from torch_svm.losses import (
    svm_loss,
    svm_loss_and_grad,
    svm_loss_autograd,
    svm_loss_multimargin,
    svm_margins,
)
from torch_svm.multimargin import MultiMarginLoss, multi_margin_loss

__version__ = "0.1.0"

__all__ = [
    "svm_loss",
    "svm_loss_and_grad",
    "svm_loss_autograd",
    "svm_loss_multimargin",
    "svm_margins",
    "multi_margin_loss",
    "MultiMarginLoss",
    "__version__",
]
