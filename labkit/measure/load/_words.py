"""Common English words that are each exactly one token in SmolLM2's tokenizer, alone, after a space and
after a newline, so that N of them joined by spaces are exactly N tokens (tests/test_load_workload.py checks
this with the real tokenizer). The synthetic prompts of `--prompt-tokens` are drawn from them.
"""

from __future__ import annotations

__all__ = ["ONE_TOKEN_WORDS"]

_WORDS = """
able about access act add after again against age air all allow along also always among and anger
another answer any apple are area areas arm around art ask author available baby back ball bank based
because been begin being best better bird black blood blue body book both bread break bright brother
build business but buy call called can car case cat cause cell certain chair change character child city
class clean clear close cloud cold come common community complex concept consider control cook cool cost
could count country course create current cut dark data day deep design did different direct disease
doctor does dog door down draw dream drive dry due during each early easy eat education effect egg else
empty energy essential even every example eye face fact family far fast father feel few field fill find
finish fire first fish fly focus follow following foot for forest form found free friend from full fun
function future game get give given glass gold good green group grow had hair hand happy hard has have
head health heart heavy help her here high him his history hold home horse hot hour house how human idea
impact import important include including into iron its job joy jump just keep key king know known lab
lake land language large last late later law lead learn learning leave leg letter levels life light like
line list listen little local long look love low made main major make making many mark market material
may mean men might milk minute model money month moon more most mother move much music must name natural
near need needs net new next night not now number ocean off office often old one only open order other
others our out over own page pain paper pass past pay peace pen people percent period person place plan
plant play point poor post potential power present press prevent price problem problems process program
project public put question quiet rain range read real reason red report research result results return
rice rich ride right risk river road role room run said salt same save say school sea second see self
sell send set several she shop short should show side sign similar simple since sing sit sky sleep slow
small snow some something song space special species specific stand star start state stay step still
stone stop story street strong student students success such sugar suggest sun support system table take
talk teacher team tell test text than that the their them then there these they things think this those
though three through time times today together too tool top town travel treat treatment tree truth turn
two type under until use used using value very view visit voice wait wake walk want war warm was wash
watch water way ways weak week well were wet what when where which while white who why wide will win
wind window with within without women wood word words work worker working works world would write year
years you young your
"""
ONE_TOKEN_WORDS: tuple[str, ...] = tuple(_WORDS.split())
