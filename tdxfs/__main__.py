from tdxfs.cli import main

raise SystemExit(main())
