from codexctl.cli import main

raise SystemExit(main())
