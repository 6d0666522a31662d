package selector

import (
	"testing"

	commonv1alpha1 "github.com/axon-cni/axon/gen/axon/common/v1alpha1"
)

func TestMatches(t *testing.T) {
	in := commonv1alpha1.LabelSelectorOperator_LABEL_SELECTOR_OPERATOR_IN
	notIn := commonv1alpha1.LabelSelectorOperator_LABEL_SELECTOR_OPERATOR_NOT_IN
	exists := commonv1alpha1.LabelSelectorOperator_LABEL_SELECTOR_OPERATOR_EXISTS
	absent := commonv1alpha1.LabelSelectorOperator_LABEL_SELECTOR_OPERATOR_DOES_NOT_EXIST
	labels := map[string]string{"app": "web", "tier": "front"}
	tests := []struct {
		name string
		sel  *commonv1alpha1.LabelSelector
		want bool
	}{
		{"nil matches all", nil, true},
		{"empty matches all", &commonv1alpha1.LabelSelector{}, true},
		{"match label", &commonv1alpha1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}, true},
		{"label mismatch", &commonv1alpha1.LabelSelector{MatchLabels: map[string]string{"app": "db"}}, false},
		{"in", &commonv1alpha1.LabelSelector{MatchExpressions: []*commonv1alpha1.LabelSelectorRequirement{{Key: "tier", Operator: in, Values: []string{"back", "front"}}}}, true},
		{"not in absent key", &commonv1alpha1.LabelSelector{MatchExpressions: []*commonv1alpha1.LabelSelectorRequirement{{Key: "env", Operator: notIn, Values: []string{"prod"}}}}, true},
		{"not in present value", &commonv1alpha1.LabelSelector{MatchExpressions: []*commonv1alpha1.LabelSelectorRequirement{{Key: "app", Operator: notIn, Values: []string{"web"}}}}, false},
		{"exists", &commonv1alpha1.LabelSelector{MatchExpressions: []*commonv1alpha1.LabelSelectorRequirement{{Key: "app", Operator: exists}}}, true},
		{"does not exist", &commonv1alpha1.LabelSelector{MatchExpressions: []*commonv1alpha1.LabelSelectorRequirement{{Key: "app", Operator: absent}}}, false},
		{"all must hold", &commonv1alpha1.LabelSelector{MatchLabels: map[string]string{"app": "web"}, MatchExpressions: []*commonv1alpha1.LabelSelectorRequirement{{Key: "env", Operator: exists}}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Parse(tt.sel)
			if err != nil {
				t.Fatal(err)
			}
			if got := s.Matches(labels); got != tt.want {
				t.Errorf("Matches = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	for name, sel := range map[string]*commonv1alpha1.LabelSelector{
		"bad key":           {MatchLabels: map[string]string{"-x": "y"}},
		"bad prefix":        {MatchLabels: map[string]string{"Foo_/x": "y"}},
		"bad value":         {MatchLabels: map[string]string{"x": "has space"}},
		"no operator":       {MatchExpressions: []*commonv1alpha1.LabelSelectorRequirement{{Key: "x"}}},
		"in without value":  {MatchExpressions: []*commonv1alpha1.LabelSelectorRequirement{{Key: "x", Operator: commonv1alpha1.LabelSelectorOperator_LABEL_SELECTOR_OPERATOR_IN}}},
		"exists with value": {MatchExpressions: []*commonv1alpha1.LabelSelectorRequirement{{Key: "x", Operator: commonv1alpha1.LabelSelectorOperator_LABEL_SELECTOR_OPERATOR_EXISTS, Values: []string{"y"}}}},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := Parse(sel); err == nil {
				t.Error("Parse accepted an invalid selector")
			}
		})
	}
}
