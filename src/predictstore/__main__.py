from predictstore.cli import main

raise SystemExit(main())
