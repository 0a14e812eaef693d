import sys

from jukebox.cli.main import main

sys.exit(main())
