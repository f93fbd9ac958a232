"""Making data for a new language, and checking it with people: annotation packages drawn from
translated items or model outputs (`sampling`), the annotators' answers (`annotations`), the
local annotation page (`annotation_page`), and the acceptance and agreement report
(`validation_report`, `agreement`).

Translating English sets with an LLM (``python -m basque_vlm.translate``): the run
(`translation`: dedupe, rules, journal, progress), the input and output files
(`translation_files`), what each kind of row holds to translate (`translation_formats`), what
never reaches the model (`translation_rules`), the languages, prompts and few-shot examples
(`translation_prompt`, ``translation_examples_en_eu.jsonl``), who translates
(`translation_backends`: a checkpoint or an OpenAI-compatible server), the resumable journal
(`translation_journal`), the quality flags (`translation_quality`) and the validation items
(`translation_items`)."""
