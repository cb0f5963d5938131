import sys

from pixelscene.cli import main

sys.exit(main())
