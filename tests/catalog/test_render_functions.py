"""The template engine: every function and construct the reference lists (§5.4, §5.5)
rendered by the real renderer (Go's text/template with sprig, ``make setup``) and
compared with the output Go and sprig define."""

from __future__ import annotations

import base64
import json
import time

import pytest

from fuzz.catalog.render import RENDER_MAX_BYTES, render_template
from fuzz.spec.problems import SpecError

VALUES = {"Name": "  Sim.fasta  ", "Cores": 4, "Gpus": 0, "Debug": True, "Quiet": False,
          "Volumes": "volume://user/a,volume://user/b:/data", "Empty": "", "Secret": "s3key"}

# (template, expected output) — each line of the reference's function tables
CASES: list[tuple[str, str]] = [
    # Go built-ins
    ("{{ not .Debug }} {{ not .Empty }} {{ not .Gpus }}", "false true true"),
    ('{{ printf "%s|%q|%d|%8d" "a" "b" 7 42 }}', 'a|"b"|7|      42'),
    ('{{ eq .Cores 4 }} {{ eq "x" "y" "x" }} {{ ne .Cores 4 }}', "true true false"),
    ("{{ and .Debug .Cores }} {{ or .Empty .Cores }} {{ and .Quiet .Cores }}", "4 4 false"),
    ('{{ index (splitList "," .Volumes) 1 }} {{ index (dict "k" "v") "k" }}',
     "volume://user/b:/data v"),
    ('{{ len .Volumes }} {{ len (list 1 2 3) }}', "37 3"),
    ("{{ gt (.Cores | int) 2 }} {{ le .Cores 3 }} {{ gt .Gpus 0 }}", "true false false"),
    # sprig, string functions
    ("[{{ trim .Name }}]", "[Sim.fasta]"),
    ('{{ hasPrefix "volume://" .Volumes }} {{ hasPrefix "s3://" .Volumes }}', "true false"),
    ('{{ substr 0 6 .Volumes }}|{{ substr 9 13 .Volumes }}', "volume|user"),
    ('{{ splitList "," .Volumes | join ";" }}', "volume://user/a;volume://user/b:/data"),
    ('{{ base "/data/in/reads.fq" }} {{ .Name | trim | trimSuffix ".fasta" }}',
     "reads.fq Sim"),
    ('{{ trimPrefix "volume://" "volume://user/a" }} {{ trimAll "/" "//a/b//" }}',
     "user/a a/b"),
    ('{{ default "none" .Empty }} {{ default "none" .Secret }} {{ default 8 .Gpus }}',
     "none s3key 8"),
    ('{{ toString .Cores | printf "%q" }} {{ lower "MiXed" }}', '"4" mixed'),
    ('{{ toJson .Name }} {{ toJson (list "a" 1 true) }}', '"  Sim.fasta  " ["a",1,true]'),
    ('{{ empty .Empty }} {{ empty .Secret }} {{ empty .Gpus }} {{ empty (list) }}',
     "true false true true"),
    ("{{ b64enc .Secret }}", base64.b64encode(b"s3key").decode()),
    ('{{ replace "/" "_" "a/b/c" }}', "a_b_c"),
    ('{{ upper "x" }} {{ quote "y" }} {{ squote "z" }} {{ title "ab cd" }}',
     'X "y" \'z\' Ab Cd'),
    ('{{ contains "user" .Volumes }} {{ hasSuffix ".fasta" (trim .Name) }}', "true true"),
    ('{{ repeat 3 "ab" }} {{ trunc 3 "abcdef" }} {{ "a b" | nospace }}', "ababab abc ab"),
    ('{{ regexMatch "^[0-9]+$" "123" }} {{ regexReplaceAll "[0-9]" "a1b2" "#" }}',
     "true a#b#"),
    ('{{ "x" | indent 2 }}|{{ "x" | nindent 2 }}', "  x|\n  x"),
    ('{{ sha256sum "fuzz" | substr 0 8 }}', "93850b70"),
    # sprig, math (int64)
    ("{{ add .Cores 30 | max 120 }} {{ add .Cores 200 | max 120 }}", "120 204"),
    ("{{ sub .Cores 1 }} {{ mul .Cores 3 }} {{ div 9 2 }} {{ mod 9 2 }} {{ min 3 1 2 }}",
     "3 12 4 1 1"),
    ('{{ int "42" }} {{ add1 .Cores }} {{ atoi "7" }}', "42 5 7"),
    # sprig, lists and maps
    ("{{ append (list 1 2) 3 | toJson }}", "[1,2,3]"),
    ('{{ $d := dict "b" 2 "a" 1 }}{{ hasKey $d "a" }} {{ keys $d | sortAlpha | join "," }}',
     "true a,b"),
    ('{{ first (list 1 2) }} {{ last (list 1 2) }} {{ list 2 1 2 | uniq | toJson }}',
     "1 2 [2,1]"),
    ('{{ coalesce .Empty .Gpus "c" }} {{ ternary "y" "n" .Debug }}', "c y"),
    # constructs: trimming, variables, if/else if, range, comments, raw strings, $
    ('{{- $x := trim .Name }}{{- $x = lower $x }}\n{{ $x }}', "\nsim.fasta"),
    ("{{ if gt .Cores 8 }}big{{ else if gt .Cores 2 }}mid{{ else }}small{{ end }}", "mid"),
    ('{{ range $i, $v := splitList "," .Volumes }}{{ $i }}={{ $v }};{{ end }}',
     "0=volume://user/a;1=volume://user/b:/data;"),
    ('{{ range $v := list "a" "b" }}{{ $v }}-{{ $.Cores }} {{ end }}', "a-4 b-4 "),
    ("a{{- /* a comment */ -}} b", "ab"),
    ("{{ `{{'shell_command': x}}` }}", "{{'shell_command': x}}"),
    ("{{ .Name | trim | base | upper }}", "SIM.FASTA"),
    ('{{ required "Secret is needed" .Secret }}', "s3key"),
]


@pytest.mark.parametrize(("template", "expected"), CASES, ids=[case[0][:40] for case in CASES])
def test_function_renders_as_go_and_sprig_define_it(template: str, expected: str) -> None:
    assert render_template(template, VALUES, "t.yaml") == expected


def test_uint_values_are_integers_and_bools_stay_bools() -> None:
    out = render_template("{{ printf \"%T %T %T\" .Cores .Debug .Name }}", VALUES, "t.yaml")
    assert out == "int64 bool string"


def test_rand_int_is_in_its_half_open_range_and_varies() -> None:
    drawn = {int(render_template("{{ randInt 20000 20004 }}", {}, "t.yaml")) for _ in range(40)}
    assert drawn <= {20000, 20001, 20002, 20003}
    assert len(drawn) > 1


def test_now_unix_epoch_is_the_current_second() -> None:
    before = int(time.time())
    out = render_template("{{ now | unixEpoch }}", {}, "t.yaml")
    assert before <= int(out) <= int(time.time())


@pytest.mark.parametrize(("template", "line", "col", "field", "message"), [
    ('version: v1\n{{- if not (hasPrefix "volume://" .Secret) }}\n'
     '  {{- fail "Secret must be a volume:// reference" }}\n{{- end }}',
     3, 6, "fail", "Secret must be a volume:// reference"),
    ('a\nb {{ required "Empty may not be empty" .Empty }}', 2, 5, "required",
     "Empty may not be empty"),
    ("{{ .Missing }}", 1, 3, "", 'map has no entry for key "Missing"'),
    ('{{ env "HOME" }}', 1, 1, "", 'function "env" not defined'),
    ("x\n{{ if .Debug }}", 2, 1, "", "unexpected EOF"),
])
def test_template_errors_are_one_line_at_the_template_position(
        template: str, line: int, col: int, field: str, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        render_template(template, VALUES, "apps/x/template.yaml")
    [problem] = caught.value.problems
    assert (problem.file, problem.line, problem.col, problem.field) == \
        ("apps/x/template.yaml", line, col, field), problem
    assert message in problem.message
    assert "\n" not in str(caught.value)


def test_values_reach_the_renderer_as_json_unchanged() -> None:
    tricky = {"S": 'quote " back \\ newline \n unicode é'}
    assert render_template("{{ .S }}", tricky, "t.yaml") == tricky["S"]
    assert json.loads(render_template("{{ toJson .S }}", tricky, "t.yaml")) == tricky["S"]


SNIPPET_FUNCTIONS = [
    "add1", "adler32sum", "ago", "all", "any", "atoi", "b32dec", "b32enc", "b64dec", "cat",
    "ceil", "chunk", "clean", "coalesce", "compact", "concat", "contains", "date", "dateInZone",
    "dateModify", "deepEqual", "dig", "dir", "div", "duration", "durationRound", "ext", "first",
    "float64", "floor", "fromJson", "get", "has", "hasSuffix", "htmlDate", "htmlDateInZone",
    "indent", "initial", "int64", "isAbs", "kindIs", "kindOf", "last", "merge", "mergeOverwrite",
    "min", "mod", "mustFirst", "nindent", "omit", "osBase", "osClean", "osDir", "osExt",
    "osIsAbs", "pick", "pluck", "plural", "prepend", "quote", "regexFind", "regexFindAll",
    "regexMatch", "regexQuoteMeta", "regexReplaceAll", "regexReplaceAllLiteral", "regexSplit",
    "repeat", "rest", "reverse", "round", "set", "sha1sum", "sha256sum", "slice", "squote",
    "title", "toDate", "toDecimal", "toPrettyJson", "toRawJson", "toStrings", "trunc", "typeIs",
    "typeIsLike", "typeOf", "uniq", "unset", "upper", "values", "without",
]
"""The functions the catalog's editor snippets offer authors (reference §5.5)."""


@pytest.mark.parametrize("name", SNIPPET_FUNCTIONS)
def test_every_function_the_catalog_editor_offers_is_defined(name: str) -> None:
    assert render_template(f"{{{{ if false }}}}{{{{ {name} }}}}{{{{ end }}}}", {}, "t") == ""


def test_a_template_writing_without_end_stops_at_the_output_cap() -> None:
    with pytest.raises(SpecError) as caught:
        render_template('{{ range until 100 }}{{ repeat 1000000 "x" }}{{ end }}', {}, "t.yaml")
    assert str(caught.value) == \
        f"t.yaml:1:1: the rendered text is larger than {RENDER_MAX_BYTES} bytes"
