// Package pyjson reads and writes JSON exactly as the Python runtime does (CPython 3.11's json
// module with the runtime's options), so the Go router answers the same error messages and computes
// the same shard keys as the Python router.
package pyjson

// Kind is the Python type a JSON value decodes to.
type Kind uint8

const (
	Null Kind = iota
	Bool
	Int    // Python int: Text holds its canonical decimal digits ("-12", "0")
	Float  // Python float
	String // Python str: Text holds it as WTF-8 (UTF-8 that may carry lone surrogates, like "surrogatepass")
	Array
	Object
)

// Value is one decoded JSON value.
type Value struct {
	Kind  Kind
	Bool  bool
	Float float64
	Text  string
	Items []Value // Array items, or Object values (in the order of Keys)
	Keys  []string
}

// Get is the value of an object's key (the last one given in the document, like a Python dict).
func (v *Value) Get(key string) (*Value, bool) {
	for i := range v.Keys {
		if v.Keys[i] == key {
			return &v.Items[i], true
		}
	}
	return nil, false
}

// set assigns key like a Python dict: a repeated key keeps its first position and takes the new value.
func (v *Value) set(key string, val Value, index map[string]int) map[string]int {
	if index == nil && len(v.Keys) >= 16 {
		index = make(map[string]int, 32)
		for i, k := range v.Keys {
			index[k] = i
		}
	}
	if index != nil {
		if i, ok := index[key]; ok {
			v.Items[i] = val
			return index
		}
		index[key] = len(v.Keys)
	} else {
		for i := range v.Keys {
			if v.Keys[i] == key {
				v.Items[i] = val
				return index
			}
		}
	}
	v.Keys = append(v.Keys, key)
	v.Items = append(v.Items, val)
	return index
}

// Str, Int, ... build values (for documents the router writes itself).
func Str(s string) Value          { return Value{Kind: String, Text: s} }
func IntText(digits string) Value { return Value{Kind: Int, Text: digits} }
func BoolV(b bool) Value          { return Value{Kind: Bool, Bool: b} }

// Obj is an ordered object under construction.
type Obj struct{ v Value }

// NewObj starts an empty object.
func NewObj() *Obj { return &Obj{v: Value{Kind: Object}} }

// Set assigns key (keeping the position of an existing key, like a Python dict).
func (o *Obj) Set(key string, val Value) *Obj { o.v.set(key, val, nil); return o }

// SetDefault assigns key only when it is missing (dict.setdefault).
func (o *Obj) SetDefault(key string, val Value) *Obj {
	if _, ok := o.v.Get(key); !ok {
		o.v.set(key, val, nil)
	}
	return o
}

// Pop removes key when present.
func (o *Obj) Pop(key string) {
	for i := range o.v.Keys {
		if o.v.Keys[i] == key {
			o.v.Keys = append(o.v.Keys[:i:i], o.v.Keys[i+1:]...)
			o.v.Items = append(o.v.Items[:i:i], o.v.Items[i+1:]...)
			return
		}
	}
}

// Has tells whether key is set.
func (o *Obj) Has(key string) bool { _, ok := o.v.Get(key); return ok }

// Len is the number of keys.
func (o *Obj) Len() int { return len(o.v.Keys) }

// Value is the object as a Value.
func (o *Obj) Value() Value { return o.v }

// ObjOf copies an object Value for editing.
func ObjOf(v Value) *Obj {
	return &Obj{v: Value{Kind: Object, Keys: append([]string(nil), v.Keys...), Items: append([]Value(nil), v.Items...)}}
}
