"""Training prompts (`training.prompts`) in the shapes sentence-transformers users know, resolved per data
set and column, and the `prompts` a trained model keeps so `encode(prompt_name=...)` gives what training saw.

The four shapes, as the sentence-transformers trainer's `prompts` argument takes them:

    prompts: "query: "                         # one prompt for every input column of every data set
    prompts: {anchor: "query: ", positive: "passage: "}          # column -> prompt
    prompts: {stsb: "sts: ", trec: "classify: "}                 # data set -> prompt (all its columns)
    prompts: {nq: {query: "query: ", answer: "passage: "}, stsb: "sts: "}  # data set -> (column -> prompt)

The collator (`embedlab.data.Collator(..., prompts=...)`) puts a column's prompt before each of its texts
and tells pooling how many tokens the prompt takes, so `model.include_prompt: false` (sentence-transformers'
Pooling `include_prompt`) leaves them out of the embedding, in training as in `encode`.
"""

from embedlab.errors import EmbedlabError

WHERE = "training.prompts"

Prompts = str | dict[str, str | dict[str, str]]  # what `training.prompts` holds


def _shown(value) -> str:
    """A value as the YAML that gave it: true, null, 'text', 5."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def check_prompts(prompts, where: str = WHERE) -> None:
    """Checks the shape alone (no data needed): None, a string, or a mapping of string keys to strings or to
    mappings of string keys to strings. Raises a one-line EmbedlabError naming the key that is wrong."""
    if prompts is None or isinstance(prompts, str):
        return
    if not isinstance(prompts, dict):
        raise EmbedlabError(
            f"config key '{where}' must be a prompt (a string for every column) or a mapping (column -> prompt, data set -> prompt, "
            f"or data set -> (column -> prompt)), got {_shown(prompts)}"
        )
    for key, value in prompts.items():
        if not isinstance(key, str):
            raise EmbedlabError(f"config key '{where}' has the key {_shown(key)}: its keys are column or data-set names: put it in quotes")
        if isinstance(value, str):
            continue
        if not isinstance(value, dict):
            raise EmbedlabError(
                f"config key '{where}.{key}' must be a prompt (a string) or, for a data set, a mapping column -> prompt, got {_shown(value)}"
            )
        for column, prompt in value.items():
            if not isinstance(column, str):
                raise EmbedlabError(f"config key '{where}.{key}' has the key {_shown(column)}: its keys are column names: put it in quotes")
            if not isinstance(prompt, str):
                raise EmbedlabError(f"config key '{where}.{key}.{column}' must be a prompt (a string), got {_shown(prompt)}")


def _names(names) -> str:
    return ", ".join(names) if names else "none"


def resolve_prompts(prompts: Prompts | None, part_names: list[str], input_columns: dict[str, list[str]]) -> dict[str, dict[str, str]]:
    """For each data set (part) of the run, its input columns' prompts: {part: {column: prompt}}.

    `part_names` are the run's data-set names (a single-data-set run has one part, e.g. "train");
    `input_columns[part]` are that data set's input columns (not its label). Columns without a prompt, and
    columns whose prompt is the empty string, are left out, so `{}` means "no prompt" for that data set.

    How a mapping is read (the ambiguity rule):
    - a mapping whose keys are all data-set names is data set -> prompt (that prompt for all the data
      set's input columns) or data set -> (column -> prompt); a data set it leaves out gets no prompt;
      each inner column must be an input column of its data set;
    - any other mapping is column -> prompt, applied in every data set that has the column; then every key
      must be an input column of some data set, and every value a string. A key that is neither a data-set
      name nor an input column (a typo, the label column, a data-set name beside column names) is a
      one-line error listing the data sets and the input columns.
    So a key that is both a data-set name and a column name is read as a data set when all keys are
    data-set names, else as a column. One string is that prompt for every input column of every data set.
    This is what the sentence-transformers data collator does, except that it ignores unknown keys where
    this is an error, since a misspelt column name would otherwise train without its prompt silently.
    """
    check_prompts(prompts)
    parts = list(part_names)
    resolved: dict[str, dict[str, str]] = {part: {} for part in parts}
    if not prompts:
        return resolved
    if isinstance(prompts, str):
        return {part: dict.fromkeys(input_columns[part], prompts) for part in parts}
    if all(key in resolved for key in prompts):  # data set -> prompt, or data set -> (column -> prompt)
        for part, value in prompts.items():
            if isinstance(value, str):
                resolved[part] = dict.fromkeys(input_columns[part], value)
                continue
            for column, prompt in value.items():
                if column not in input_columns[part]:
                    raise EmbedlabError(
                        f"config key '{WHERE}.{part}.{column}': data set '{part}' has no input column '{column}': "
                        f"its input columns are {_names(input_columns[part])}"
                    )
                resolved[part][column] = prompt
    else:  # column -> prompt
        all_columns = list(dict.fromkeys(column for part in parts for column in input_columns[part]))
        for key, value in prompts.items():
            if key not in all_columns:
                why = (
                    f"'{key}' is a data set but other keys are not: give prompts per data set or per column, not both"
                    if key in resolved
                    else f"'{key}' is neither a data set nor an input column"
                )
                raise EmbedlabError(f"config key '{WHERE}': {why} (data sets: {_names(parts)}; input columns: {_names(all_columns)})")
            if not isinstance(value, str):
                raise EmbedlabError(
                    f"config key '{WHERE}.{key}' must be a prompt (a string): '{key}' is an input column, not a data set "
                    f"(data sets: {_names(parts)})"
                )
        for part in parts:
            resolved[part] = {column: prompts[column] for column in input_columns[part] if column in prompts}
    return {part: {column: prompt for column, prompt in columns.items() if prompt} for part, columns in resolved.items()}


def saved_prompts(prompts: Prompts | None, resolved: dict[str, dict[str, str]]) -> tuple[dict[str, str], str | None]:
    """The `prompts` and `default_prompt_name` a model trained with `prompts` keeps (config_sentence_transformers.json).

    `resolved` is what `resolve_prompts` returned for the same prompts (its keys are the data-set names,
    which tell a data-set mapping from a column mapping, by the same rule). Names, by shape:
    - one string s: {"default": s}, and default_prompt_name "default": every text was trained with it, so
      `encode` uses it unless told otherwise (`prompt_name=None` with no default would drop it), as
      sentence-transformers does with a model's default prompt;
    - column -> prompt: the column names ("query", "document" ...): the names users pass to
      `encode(prompt_name="query")`, as models such as E5 and BGE ship them; no default, since no single
      column's prompt fits every text;
    - data set -> prompt: the data-set names ("stsb", "trec"): encode text like that data set's with its prompt;
    - data set -> (column -> prompt): "dataset/column" names ("nq/query"): unique across data sets that
      share column names, and readable; a data set given one string keeps its bare name.
    Empty prompts (no prompt) are left out. Nothing else is stored; no default but for the one-string shape.
    """
    check_prompts(prompts)
    if not prompts:
        return {}, None
    if isinstance(prompts, str):
        return ({"default": prompts}, "default") if prompts else ({}, None)
    saved: dict[str, str] = {}
    if all(key in resolved for key in prompts):
        for part, value in prompts.items():
            if isinstance(value, str):
                saved[part] = value
            else:
                saved.update({f"{part}/{column}": prompt for column, prompt in value.items()})
    else:
        saved = dict(prompts)
    return {name: prompt for name, prompt in saved.items() if prompt}, None


def store_prompts(model, prompts: Prompts | None, resolved: dict[str, dict[str, str]]) -> None:
    """Puts the trained prompts in `model` (an EmbeddingModel) before `model.save`: they are added to the
    model's own prompts (replacing any of the same name), and `default_prompt_name` becomes the trained one
    (None unless one string was every column's prompt), since a base model's default prompt was not part
    of what this training saw. Without training prompts the model is left as it is."""
    saved, default = saved_prompts(prompts, resolved)
    if not saved:
        return
    model.prompts = {**model.prompts, **saved}
    model.default_prompt_name = default
