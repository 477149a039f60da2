// fuzz-render: renders one Fuzzball application template with Go's text/template and
// the sprig function library, the engine Fuzzball itself uses (fuzz/catalog/render.py
// runs it as a subprocess).
//
// stdin:  {"name": "t", "template": "...", "values": {"Name": value}, "max_bytes": N}
// (max_bytes: the most text the render may write)
//
// stdout: {"output": "..."} or {"error": "template: template.yaml:3:7: ..."}
// Exit status 0 either way; anything else is a broken renderer.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"text/template"

	"github.com/Masterminds/sprig"
)

type request struct {
	Name     string                 `json:"name"`
	Template string                 `json:"template"`
	Values   map[string]interface{} `json:"values"`
	MaxBytes int                    `json:"max_bytes"`
}

// capped is the output: a template that writes more than max bytes stops there.
type capped struct {
	bytes.Buffer
	max int
}

func (out *capped) Write(data []byte) (int, error) {
	if out.Len()+len(data) > out.max {
		return 0, fmt.Errorf("the rendered text is larger than %d bytes", out.max)
	}
	return out.Buffer.Write(data)
}

type reply struct {
	Output *string `json:"output,omitempty"`
	Error  *string `json:"error,omitempty"`
}

// functions is sprig's text function map less what would reach outside the template
// (the renderer's environment: env, expandenv; DNS: getHostByName), plus Helm's
// `required`, which sprig lacks and the catalog's Helm-minded authors may reach for.
func functions() template.FuncMap {
	funcs := sprig.TxtFuncMap()
	for _, name := range []string{"env", "expandenv", "getHostByName"} {
		delete(funcs, name)
	}
	funcs["required"] = required
	return funcs
}

// required is Helm's: the value, or an error with the message when it is nil or "".
func required(message string, value interface{}) (interface{}, error) {
	if value == nil {
		return nil, errors.New(message)
	}
	if text, ok := value.(string); ok && text == "" {
		return nil, errors.New(message)
	}
	return value, nil
}

// integers turns the JSON numbers of the values into int64 (uint_value is an int64 in
// Fuzzball's API), leaving any other number a float64.
func integers(value interface{}) interface{} {
	switch typed := value.(type) {
	case json.Number:
		if whole, err := typed.Int64(); err == nil {
			return whole
		}
		float, _ := typed.Float64()
		return float
	case map[string]interface{}:
		for key, item := range typed {
			typed[key] = integers(item)
		}
	case []interface{}:
		for index, item := range typed {
			typed[index] = integers(item)
		}
	}
	return value
}

func render(req request) (string, error) {
	tmpl, err := template.New(req.Name).Funcs(functions()).Option("missingkey=error").Parse(req.Template)
	if err != nil {
		return "", err
	}
	out := capped{max: req.MaxBytes}
	if err := tmpl.Execute(&out, req.Values); err != nil {
		return "", err
	}
	return out.String(), nil
}

func main() {
	decoder := json.NewDecoder(os.Stdin)
	decoder.UseNumber()
	var req request
	if err := decoder.Decode(&req); err != nil {
		fmt.Fprintf(os.Stderr, "fuzz-render: bad request: %v\n", err)
		os.Exit(2)
	}
	for key, value := range req.Values {
		req.Values[key] = integers(value)
	}
	var rep reply
	if output, err := render(req); err != nil {
		message := err.Error()
		rep.Error = &message
	} else {
		rep.Output = &output
	}
	if err := json.NewEncoder(os.Stdout).Encode(rep); err != nil {
		fmt.Fprintf(os.Stderr, "fuzz-render: %v\n", err)
		os.Exit(2)
	}
}
