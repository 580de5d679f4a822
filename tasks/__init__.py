"""SeqIO task registrations, importable as `prompt_tuning.tasks`.

Importing registers every task and mixture; no data is read and nothing is
downloaded until a dataset is requested (except the first line of each file
`PROMPT_TUNING_TEXT_FILES` names, to check its spec; see `pretraining`).
"""

from . import domain_shift
from . import glue
from . import pretraining
from . import sentences
from . import super_glue
