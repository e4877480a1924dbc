from microgesture.cli import main

raise SystemExit(main())
