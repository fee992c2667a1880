"""``python -m tests.tfserving_standin <tensorflow_model_server flags>`` (a test double)."""

import sys

from tests.tfserving_standin.server import main

if __name__ == "__main__":
    sys.exit(main())
