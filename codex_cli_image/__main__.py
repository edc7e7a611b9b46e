from codex_cli_image.cli import main

raise SystemExit(main())
