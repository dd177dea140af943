"""``python -m rankalign ...`` (and ``accelerate launch -m rankalign train ...``)."""

import sys

from rankalign.cli import main

sys.exit(main())
