"""SeqIO task registrations, importable as `prompt_tuning.tasks`.

Importing registers every task and mixture; no data is read and nothing is
downloaded until a dataset is requested.
"""

from . import domain_shift
from . import glue
from . import sentences
from . import super_glue
