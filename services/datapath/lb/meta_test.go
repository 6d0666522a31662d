package lb

import (
	"testing"
	"time"
)

// FuzzDecodeMeta feeds arbitrary bytes, as a map entry could hold after a
// crash or from another build, to the metadata decoder: it must not panic,
// and what it reads must encode and read back the same.
func FuzzDecodeMeta(f *testing.F) {
	f.Add(meta{namespace: "default", name: "web", portName: "http", policy: 2, revision: 7, updateTime: time.Unix(1, 2), weightUnit: 3}.encode())
	f.Add([]byte{0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMeta(b)
		if err != nil {
			return
		}
		again, err := decodeMeta(m.encode())
		if err != nil || again.namespace != m.namespace || again.revision != m.revision || len(again.sourceRanges) != len(m.sourceRanges) {
			t.Fatalf("%+v read back as %+v, %v", m, again, err)
		}
	})
}
