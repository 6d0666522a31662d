// Package selector evaluates Kubernetes-style label selectors given as
// axon.common.v1alpha1.LabelSelector, for every service that selects by
// labels (IPAM pools, LB-IPAM pools, network policies).
package selector

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	commonv1alpha1 "github.com/axon-cni/axon/gen/axon/common/v1alpha1"
	"github.com/axon-cni/axon/services/internal/bounded"
)

// Selector is a parsed, validated label selector. The zero value and an
// empty selector match everything.
type Selector struct {
	reqs []requirement
}

type requirement struct {
	key    string
	op     commonv1alpha1.LabelSelectorOperator
	values []string
}

// Parse validates s. A nil s yields nil, which callers treat as "not set".
func Parse(s *commonv1alpha1.LabelSelector) (*Selector, error) {
	if s == nil {
		return nil, nil
	}
	var errs []error
	sel := &Selector{}
	keys := make([]string, 0, len(s.GetMatchLabels()))
	for k := range s.GetMatchLabels() {
		keys = append(keys, k)
	}
	slices.Sort(keys) // deterministic evaluation and error order
	for _, k := range keys {
		v := s.GetMatchLabels()[k]
		if err := validKey(k); err != nil {
			errs = append(errs, err)
		}
		if err := validValue(v); err != nil {
			errs = append(errs, fmt.Errorf("match_labels[%s]: %w", bounded.Quote(k), err))
		}
		sel.reqs = append(sel.reqs, requirement{key: k, op: commonv1alpha1.LabelSelectorOperator_LABEL_SELECTOR_OPERATOR_IN, values: []string{v}})
	}
	for i, e := range s.GetMatchExpressions() {
		if err := validKey(e.GetKey()); err != nil {
			errs = append(errs, fmt.Errorf("match_expressions[%d]: %w", i, err))
		}
		switch e.GetOperator() {
		case commonv1alpha1.LabelSelectorOperator_LABEL_SELECTOR_OPERATOR_IN, commonv1alpha1.LabelSelectorOperator_LABEL_SELECTOR_OPERATOR_NOT_IN:
			if len(e.GetValues()) == 0 {
				errs = append(errs, fmt.Errorf("match_expressions[%d]: %s needs at least one value", i, e.GetOperator()))
			}
		case commonv1alpha1.LabelSelectorOperator_LABEL_SELECTOR_OPERATOR_EXISTS, commonv1alpha1.LabelSelectorOperator_LABEL_SELECTOR_OPERATOR_DOES_NOT_EXIST:
			if len(e.GetValues()) != 0 {
				errs = append(errs, fmt.Errorf("match_expressions[%d]: %s takes no values", i, e.GetOperator()))
			}
		default:
			errs = append(errs, fmt.Errorf("match_expressions[%d]: operator is required", i))
		}
		for _, v := range e.GetValues() {
			if err := validValue(v); err != nil {
				errs = append(errs, fmt.Errorf("match_expressions[%d]: %w", i, err))
			}
		}
		sel.reqs = append(sel.reqs, requirement{key: e.GetKey(), op: e.GetOperator(), values: e.GetValues()})
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return sel, nil
}

// Matches reports whether labels satisfy every requirement of s. A nil s
// matches everything.
func (s *Selector) Matches(labels map[string]string) bool {
	if s == nil {
		return true
	}
	for _, r := range s.reqs {
		v, ok := labels[r.key]
		switch r.op {
		case commonv1alpha1.LabelSelectorOperator_LABEL_SELECTOR_OPERATOR_IN:
			if !ok || !slices.Contains(r.values, v) {
				return false
			}
		case commonv1alpha1.LabelSelectorOperator_LABEL_SELECTOR_OPERATOR_NOT_IN:
			if ok && slices.Contains(r.values, v) {
				return false
			}
		case commonv1alpha1.LabelSelectorOperator_LABEL_SELECTOR_OPERATOR_EXISTS:
			if !ok {
				return false
			}
		case commonv1alpha1.LabelSelectorOperator_LABEL_SELECTOR_OPERATOR_DOES_NOT_EXIST:
			if ok {
				return false
			}
		}
	}
	return true
}

var (
	nameRE   = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`)
	prefixRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
)

// validKey checks a label key: an optional DNS subdomain prefix and '/',
// then a name of at most 63 characters, as Kubernetes requires.
func validKey(k string) error {
	prefix, name, hasPrefix := strings.Cut(k, "/")
	if !hasPrefix {
		name = prefix
	} else if len(prefix) == 0 || len(prefix) > 253 || !prefixRE.MatchString(prefix) {
		return fmt.Errorf("label key %s: prefix must be a DNS subdomain", bounded.Quote(k))
	}
	if len(name) == 0 || len(name) > 63 || !nameRE.MatchString(name) {
		return fmt.Errorf("label key %s: name must be 1-63 alphanumerics, '-', '_' or '.', starting and ending alphanumeric", bounded.Quote(k))
	}
	return nil
}

func validValue(v string) error {
	if v == "" {
		return nil
	}
	if len(v) > 63 || !nameRE.MatchString(v) {
		return fmt.Errorf("label value %s: must be at most 63 alphanumerics, '-', '_' or '.', starting and ending alphanumeric", bounded.Quote(v))
	}
	return nil
}
