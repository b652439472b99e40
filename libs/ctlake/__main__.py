from ctlake.cli import main

raise SystemExit(main())
