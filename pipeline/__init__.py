"""ehc: batch enrolment of residents for the electronic health card platform."""

import os

# numpy's OpenBLAS starts a thread per core at import, which spins for a while (0.12 s of CPU),
# and nothing here multiplies matrices.  Set before numpy is first imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"
