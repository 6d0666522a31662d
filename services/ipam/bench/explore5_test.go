package bench

import (
	"os"
	"testing"
)

func TestExploreScale(t *testing.T) {
	if os.Getenv("EXPLORE_SCALE") == "" {
		t.Skip()
	}
	r := runScale(t)
	t.Logf("%+v", r)
}
