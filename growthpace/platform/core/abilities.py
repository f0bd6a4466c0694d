"""The DoIT preset's vocabulary: its ten abilities, out-of-domain subjects, splits and sources.

A spec that declares no `abilities:` is a DoIT study and uses these names (and items.question_kind's
type-and-gold rule); a spec that declares them uses its own (core/spec.py ``Spec.ability_names``).
"""

ABILITIES: tuple[str, ...] = (
    "biology",
    "history",
    "code",
    "creative_writing",
    "chinese",
    "understanding",
    "role_play",
    "reasoning",
    "math",
    "ethics",
)

OOD_SUBJECTS: tuple[str, ...] = ("physician", "teacher_qualification", "urban_rural_planner")

TRAIN_SPLITS: tuple[str, ...] = ("1000", "full")
EVAL_SPLITS: tuple[str, ...] = ("valid", "test")
SOURCES: tuple[str, ...] = ("curated", "synthetic")
# The kind of a declared ability whose items each carry their own `kind` field.
PER_ITEM = "per_item"
# The most abilities a spec may declare: the report draws one panel per ability.
MAX_ABILITIES = 50

# Chat tokens of the study's framing: <user> text <eot> <assistant> text <eot>.
USER, ASSISTANT, EOT, PAD = "<user>", "<assistant>", "<eot>", "<pad>"
CHAT_TOKENS: tuple[str, ...] = (USER, ASSISTANT, EOT, PAD)

# The plain-text world corpus under a data root (pre-training); data.models[].pretrain.corpus defaults to it.
WORLD = "world/world.txt"
