"""`python -m align_tf.cli` is the `align-tf` command."""

import sys

from align_tf.cli import main

sys.exit(main())
