"""``python -m langchain_retro``: the ``langchain-retro`` command."""

import sys

from langchain_retro.cli import main

sys.exit(main())
