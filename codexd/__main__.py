from codexd.cli import main

raise SystemExit(main())
