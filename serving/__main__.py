"""`python -m serving`: the prediction service (serving/app.py)."""
from serving.app import main

raise SystemExit(main())
