"""`python -m tfship.backup`: the checkpoint backup agent, started by the training stage."""

from tfship.backup.agent import main

raise SystemExit(main())
