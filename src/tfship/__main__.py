from tfship.cli import main

raise SystemExit(main())
