from wellhead.cli import main

raise SystemExit(main())
