"""`python -m yolact_batch.cli`: the yolact-batch command."""

from yolact_batch.cli.main import main

raise SystemExit(main())
