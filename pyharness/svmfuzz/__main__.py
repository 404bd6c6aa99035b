from svmfuzz.cli import main

raise SystemExit(main())
