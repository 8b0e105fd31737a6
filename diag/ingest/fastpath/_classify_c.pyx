include "classify.py"
