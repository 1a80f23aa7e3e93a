package config

import (
	"bytes"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// YAML writes c as a config file (without comments) that Parse reads back
// as c: the effective configuration.
func (c Config) YAML() ([]byte, error) {
	var b bytes.Buffer
	e := yaml.NewEncoder(&b)
	e.SetIndent(2)
	if err := e.Encode(encode(reflect.ValueOf(c))); err != nil {
		return nil, err
	}
	if err := e.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// encode is the inverse of decoder.value: it writes only the fields a
// kinded struct's kind allows, and no nil pointers.
func encode(v reflect.Value) *yaml.Node {
	scalar := func(tag, s string) *yaml.Node {
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: s}
	}
	switch v.Type() {
	case durationType:
		return scalar("!!str", formatDuration(time.Duration(v.Int())))
	case sizeType:
		if v.Int() == 0 {
			return scalar("!!int", "0")
		}
		return scalar("!!str", Size(v.Int()).String())
	}
	switch v.Kind() {
	case reflect.Pointer:
		return encode(v.Elem())
	case reflect.Struct:
		n := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		if _, ok := v.Interface().(interface{ flow() }); ok {
			n.Style = yaml.FlowStyle
		}
		kind := ""
		if _, ok := reflect.New(v.Type()).Interface().(kinded); ok {
			kind = v.FieldByName("Kind").String()
		}
		for _, f := range fieldsOf(v.Type()).list {
			fv := v.Field(f.index)
			if f.kinds != nil && !slices.Contains(f.kinds, kind) || fv.Kind() == reflect.Pointer && fv.IsNil() {
				continue
			}
			n.Content = append(n.Content, scalar("!!str", f.name), encode(fv))
		}
		return n
	case reflect.Slice:
		n := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
		if k := v.Type().Elem().Kind(); k != reflect.Struct {
			n.Style = yaml.FlowStyle
		}
		for i := range v.Len() {
			n.Content = append(n.Content, encode(v.Index(i)))
		}
		return n
	case reflect.String:
		return scalar("!!str", v.String())
	case reflect.Int:
		return scalar("!!int", strconv.FormatInt(v.Int(), 10))
	case reflect.Float64:
		s := strconv.FormatFloat(v.Float(), 'g', -1, 64)
		if !strings.ContainsAny(s, ".eIN") {
			s += ".0"
		}
		return scalar("!!float", s)
	case reflect.Bool:
		return scalar("!!bool", strconv.FormatBool(v.Bool()))
	}
	panic("config: no encoder for " + v.Type().String())
}

// formatDuration is d.String without zero minutes and seconds: "8h",
// "1h30m", "90s" is "1m30s".
func formatDuration(d time.Duration) string {
	s := d.String()
	s, _ = strings.CutSuffix(s, "m0s")
	if len(s) < len(d.String()) {
		s += "m"
	}
	if t, ok := strings.CutSuffix(s, "h0m"); ok {
		s = t + "h"
	}
	return s
}
