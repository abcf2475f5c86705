import sys

from nalln.cli.main import main

sys.exit(main())
