"""Temporary: the names verification/ imports from here until it moves to their new homes
(:mod:`torch_svm.errors`, :mod:`torch_svm.device`, :mod:`torch_svm.files`,
:mod:`torch_svm.progress`). Deleted by the redesign's last step."""
from torch_svm.device import (DTYPES, THREAD_GRAIN, auto_threads, cpu_cores, resolve_device,  # noqa: F401
                              resolve_dtype, using_threads)
from torch_svm.errors import (check_choice, check_int, check_memory, check_real, clip,  # noqa: F401
                              clipped_repr, describe)
from torch_svm.files import (atomic_directory, atomic_write_bytes, atomic_write_json,  # noqa: F401
                             atomic_write_text, jsonable, open_regular)
from torch_svm.progress import progress  # noqa: F401
