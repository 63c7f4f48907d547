from mimlens.cli import main

raise SystemExit(main())
