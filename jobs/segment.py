"""``ray job submit --working-dir . -- python jobs/segment.py --input ... --model ... --output ...``

The same options as ``yolact-batch segment``; inside a Ray job (``RAY_ADDRESS`` set) it
joins that cluster, elsewhere it starts a local Ray.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the uploaded working dir holds yolact_batch

from yolact_batch.cli.main import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["segment", *sys.argv[1:]]))
