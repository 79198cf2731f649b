import sys

from mtlsearch.report.cli import main

sys.exit(main())
