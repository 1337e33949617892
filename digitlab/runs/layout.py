"""How run folders are named, for the code that makes them and the code that reads them (without Lightning)."""

import re

RUN_PREFIX = "version_"  # a fit: lightning_logs/version_N
EVALUATION_SUBCOMMANDS = ("validate", "test", "predict")  # an evaluation: version_N/test_K
EVALUATION_FOLDER = re.compile(rf"({'|'.join(EVALUATION_SUBCOMMANDS)})_(\d+)")
