"""Making data for a new language, and checking it with people: annotation packages drawn from
translated items or model outputs (`sampling`), the annotators' answers (`annotations`), the
local annotation page (`annotation_page`), and the acceptance and agreement report
(`validation_report`, `agreement`)."""
