package config

import (
	"fmt"
	"math"
	"net/netip"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// decoder fills a Go value from a yaml.Node tree. It exists instead of
// yaml.Unmarshal for three reasons: every problem must carry its line,
// every problem in the file must be reported in one go (not just the first),
// and the position of every key must be kept for the semantic checks that run
// after decoding.
type decoder struct {
	problems []Problem
	// lines maps a key path ("inventory.targets[1].addresses[0]") to the line
	// it was written on.
	lines map[string]int
	// budget bounds the nodes visited, so that aliases cannot expand a small
	// file into an exponential amount of work ("billion laughs").
	budget int
}

// maxNodes is far above any real configuration (10,000 targets fit).
const maxNodes = 1_000_000

var (
	durationType = reflect.TypeFor[time.Duration]()
	byteSizeType = reflect.TypeFor[ByteSize]()
	addrType     = reflect.TypeFor[netip.Addr]()
	prefixType   = reflect.TypeFor[netip.Prefix]()
	addrPortType = reflect.TypeFor[netip.AddrPort]()
	portType     = reflect.TypeFor[Port]()
	endpointType = reflect.TypeFor[Endpoint]()
)

// maxProblems bounds the report: past it, more lines help nobody.
const maxProblems = 50

func (d *decoder) errorf(n *yaml.Node, path, format string, args ...any) {
	if len(d.problems) >= maxProblems {
		return
	}
	d.problems = append(d.problems, Problem{Line: n.Line, Path: path, Msg: fmt.Sprintf(format, args...)})
}

func joinPath(parent, key string) string {
	if parent == "" {
		return key
	}
	return parent + "." + key
}

// decode stores n into v (an addressable value) and records problems.
func (d *decoder) decode(n *yaml.Node, path string, v reflect.Value) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if d.budget++; d.budget > maxNodes || len(d.problems) >= maxProblems {
		if d.budget == maxNodes+1 {
			d.errorf(n, path, "the document expands to more than %d values (aliases?); refusing it", maxNodes)
		}
		return
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // an empty value keeps the zero value, which means "default"
	}
	switch {
	case v.Type() == durationType:
		d.duration(n, path, v)
		return
	case v.Type() == byteSizeType:
		d.byteSize(n, path, v)
		return
	case v.Type() == addrType, v.Type() == prefixType, v.Type() == addrPortType:
		d.netip(n, path, v)
		return
	case v.Type() == portType:
		if !d.scalar(n, path, `a port such as 8080, "5353/udp" or "4000/tcp+udp"`) {
			return
		}
		p, err := ParsePort(n.Value)
		if err != nil {
			d.errorf(n, path, `%v; write a port such as 8080, "5353/udp" or "4000/tcp+udp"`, err)
			return
		}
		v.Set(reflect.ValueOf(p))
		return
	case v.Type() == endpointType:
		if !d.scalar(n, path, `an endpoint such as "192.0.2.7:5432" or "[2001:db8::7]:53/udp"`) {
			return
		}
		e, err := ParseEndpoint(n.Value)
		if err != nil {
			d.errorf(n, path, `%v; write an endpoint such as "192.0.2.7:5432", "[2001:db8::7]:53/udp" or "192.0.2.8:88/tcp+udp"`, err)
			return
		}
		v.Set(reflect.ValueOf(e))
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		d.structure(n, path, v)
	case reflect.Slice:
		d.sequence(n, path, v)
	case reflect.Map:
		d.mapping(n, path, v)
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		d.decode(n, path, v.Elem())
	case reflect.String:
		if d.scalar(n, path, "a string") {
			v.SetString(n.Value)
		}
	case reflect.Bool:
		if !d.scalar(n, path, "true or false") {
			return
		}
		if n.Tag != "!!bool" {
			d.errorf(n, path, "%q is not a boolean (use true or false)", n.Value)
			return
		}
		b, _ := strconv.ParseBool(strings.ToLower(n.Value))
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if !d.scalar(n, path, "a whole number") {
			return
		}
		i, err := strconv.ParseInt(n.Value, 0, v.Type().Bits())
		if n.Tag != "!!int" || err != nil {
			d.errorf(n, path, "%q is not a whole number in range", n.Value)
			return
		}
		v.SetInt(i)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if !d.scalar(n, path, "a whole number") {
			return
		}
		u, err := strconv.ParseUint(n.Value, 0, v.Type().Bits())
		if n.Tag != "!!int" || err != nil {
			d.errorf(n, path, "%q is not a whole number from 0 to %d", n.Value, uint64(math.MaxUint64>>(64-v.Type().Bits())))
			return
		}
		v.SetUint(u)
	default:
		// A programming error in the Config types, not a user error.
		panic(fmt.Sprintf("config: cannot decode into %s", v.Type()))
	}
}

// scalar reports whether n is a scalar, recording a problem otherwise.
func (d *decoder) scalar(n *yaml.Node, path, want string) bool {
	if n.Kind == yaml.ScalarNode {
		return true
	}
	d.errorf(n, path, "expected %s, found %s", want, kindName(n))
	return false
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping (key: value lines)"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("the value %q", n.Value)
	}
	return "something else"
}

func (d *decoder) duration(n *yaml.Node, path string, v reflect.Value) {
	if !d.scalar(n, path, "a duration such as 30s or 10m") {
		return
	}
	dur, err := parseDuration(n.Value)
	if err != nil || dur < 0 {
		d.errorf(n, path, "%q is not a duration (write it with a unit, such as 30s, 10m, 1h or 90d)", n.Value)
		return
	}
	v.SetInt(int64(dur))
}

// parseDuration is time.ParseDuration, and whole days: "90d".
func parseDuration(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseUint(days, 10, 32)
		if err != nil || n > 100*365 {
			return 0, fmt.Errorf("not a number of days: %q", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	return time.ParseDuration(s)
}

// byteUnits are the suffixes a size may have.
var byteUnits = []struct {
	suffix string
	n      int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1},
}

func (d *decoder) byteSize(n *yaml.Node, path string, v reflect.Value) {
	if !d.scalar(n, path, "a size such as 500MiB or 20GB") {
		return
	}
	num, mult := strings.TrimSpace(n.Value), int64(1)
	for _, u := range byteUnits {
		if rest, ok := strings.CutSuffix(num, u.suffix); ok {
			num, mult = strings.TrimSpace(rest), u.n
			break
		}
	}
	x, err := strconv.ParseInt(num, 10, 64)
	if err != nil || x < 0 || x > math.MaxInt64/mult {
		d.errorf(n, path, "%q is not a size (a whole number of bytes, or with a unit: KiB, MiB, GiB, TiB, KB, MB, GB, TB)", n.Value)
		return
	}
	v.SetInt(x * mult)
}

func (d *decoder) netip(n *yaml.Node, path string, v reflect.Value) {
	if !d.scalar(n, path, "an address") {
		return
	}
	var (
		parsed any
		err    error
		what   string
	)
	switch v.Type() {
	case addrType:
		what = "an IP address"
		parsed, err = netip.ParseAddr(n.Value)
	case prefixType:
		what = "a CIDR prefix such as 198.18.0.0/26 or 2001:db8::/64"
		var p netip.Prefix
		p, err = netip.ParsePrefix(n.Value)
		if err == nil && p != p.Masked() {
			err = fmt.Errorf("host bits are set (did you mean %s?)", p.Masked())
		}
		parsed = p
	case addrPortType:
		what = "an address and port such as 127.0.0.1:9443 or [::1]:9443"
		parsed, err = netip.ParseAddrPort(n.Value)
	}
	if err != nil {
		d.errorf(n, path, "%q is not %s: %v", n.Value, what, err)
		return
	}
	v.Set(reflect.ValueOf(parsed))
}

func (d *decoder) sequence(n *yaml.Node, path string, v reflect.Value) {
	if n.Kind != yaml.SequenceNode {
		d.errorf(n, path, "expected a list, found %s", kindName(n))
		return
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, item := range n.Content {
		p := fmt.Sprintf("%s[%d]", path, i)
		d.lines[p] = item.Line
		d.decode(item, p, s.Index(i))
	}
	v.Set(s)
}

func (d *decoder) mapping(n *yaml.Node, path string, v reflect.Value) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "expected a mapping (key: value lines), found %s", kindName(n))
		return
	}
	if v.Type().Key().Kind() != reflect.String {
		panic("config: map keys must be strings")
	}
	m := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		p := joinPath(path, k.Value)
		d.lines[p] = k.Line
		if k.Kind != yaml.ScalarNode {
			d.errorf(k, path, "a key must be a plain name")
			continue
		}
		elem := reflect.New(v.Type().Elem()).Elem()
		d.decode(val, p, elem)
		m.SetMapIndex(reflect.ValueOf(k.Value).Convert(v.Type().Key()), elem)
	}
	v.Set(m)
}

func (d *decoder) structure(n *yaml.Node, path string, v reflect.Value) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "expected a mapping (key: value lines), found %s", kindName(n))
		return
	}
	fields := yamlFields(v.Type())
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		p := joinPath(path, k.Value)
		if k.Value == "<<" {
			d.errorf(k, path, "merge keys (<<) are not supported; write the keys out")
			continue
		}
		idx, ok := fields[k.Value]
		if !ok {
			d.errorf(k, p, "unknown key%s", suggest(k.Value, fields, path))
			continue
		}
		d.lines[p] = k.Line
		d.decode(val, p, v.Field(idx))
	}
}

// yamlFields maps each yaml key of struct type t to its field index.
func yamlFields(t reflect.Type) map[string]int {
	fields := make(map[string]int, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		fields[name] = i
	}
	return fields
}

// suggest names the closest known key when the unknown one looks like a typo,
// and otherwise lists the keys that are allowed there.
func suggest(key string, fields map[string]int, path string) string {
	known := make([]string, 0, len(fields))
	for k := range fields {
		known = append(known, k)
	}
	sort.Strings(known)
	// A typo is a small edit, or an abbreviation of a long key
	// ("vnet_iface" for "vnet_interface").
	lower := strings.ToLower(key)
	best, bestDist := "", 3
	for _, k := range known {
		if dist := editDistance(lower, k); dist < bestDist {
			best, bestDist = k, dist
		}
	}
	if best == "" {
		bestPrefix := 4
		for _, k := range known {
			if n := commonPrefix(lower, k); n > bestPrefix && 2*n >= len(lower) {
				best, bestPrefix = k, n
			}
		}
	}
	if best != "" {
		return fmt.Sprintf(" (did you mean %q?)", best)
	}
	where := "here"
	if path != "" {
		where = "in " + path
	}
	return fmt.Sprintf("; allowed %s: %s", where, strings.Join(known, ", "))
}

func commonPrefix(a, b string) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
