package router

import (
	"os"
	"strings"
	"sync"
	"time"

	"metaparticle/router/internal/pyjson"
)

// Logger writes logs.JsonFormatter's lines: one JSON object per line on stderr, tagged with the
// role and replica.
type Logger struct {
	role, replica string
	quiet         bool // MP_LOG_LEVEL above INFO: errors only
	mu            sync.Mutex
}

func NewLogger(role, replica, level string) *Logger {
	switch strings.ToUpper(level) {
	case "WARNING", "WARN", "ERROR", "CRITICAL":
		return &Logger{role: role, replica: replica, quiet: true}
	}
	return &Logger{role: role, replica: replica}
}

func (l *Logger) Info(msg string, fields ...any) {
	if !l.quiet {
		l.write("info", msg, fields)
	}
}
func (l *Logger) Error(msg string, fields ...any) { l.write("error", msg, fields) }

func (l *Logger) write(level, msg string, fields []any) {
	now := time.Now().UTC()
	doc := pyjson.NewObj().
		Set("ts", pyjson.Str(now.Format("2006-01-02T15:04:05.000")+"Z")).
		Set("level", pyjson.Str(level)).Set("role", pyjson.Str(l.role)).
		Set("replica", pyjson.Str(l.replica)).Set("msg", pyjson.Str(msg))
	for i := 0; i+1 < len(fields); i += 2 {
		key, _ := fields[i].(string)
		switch v := fields[i+1].(type) {
		case string:
			doc.Set(key, pyjson.Str(v))
		case int:
			doc.Set(key, intV(v))
		case int64:
			doc.Set(key, intV(int(v)))
		}
	}
	line := append(pyjson.Dumps(doc.Value()), '\n')
	l.mu.Lock()
	os.Stderr.Write(line)
	l.mu.Unlock()
}
