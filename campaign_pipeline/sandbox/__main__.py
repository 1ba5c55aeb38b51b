"""``python -m campaign_pipeline.sandbox``: the same as ``campaign-sandbox``."""

import sys

from .cli import main

sys.exit(main())
