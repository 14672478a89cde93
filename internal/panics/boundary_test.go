package panics_test

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// boundaryExceptions are the goroutines and library callbacks that need no
// Recover of their own, each with the reason. The key is the file (relative
// to the module root), the enclosing function, and the started function or
// the API the callback is handed to, as TestPanicBoundary prints them.
// Each key is a path.Match pattern.
var boundaryExceptions = map[string]string{
	"ingest/srt/publisher.go * OnD*": "mediacommon's mpegts.Reader calls OnData*/OnDecodeError synchronously " +
		"from Read, on the publisher's demux goroutine, which runs under panics.Do",
	"ingest/*/*.go * OnKeyframeRequest": "media.Publication calls it synchronously on the goroutine that asks " +
		"for a keyframe (a viewer's RTCP reader, under its Recover)",
	"egress/whep/pump.go add go run": "the loop itself only locks and copies a slice; each viewer's send runs " +
		"under panics.Do, and a panic there ends that viewer",
	"ingest/srt/pull.go probe context.AfterFunc":         "only sets a deadline on a net.Conn",
	"internal/rtmpwire/client.go dial context.AfterFunc": "only closes a net.Conn",
	"rtc/engine.go New SetInterfaceFilter":               "only slices.Contains on a private copy of the configured names",
	"transcode/av/*_cgo.go * runtime.AddCleanup": "only calls a C free function: no Go panic can happen there " +
		"(a crash inside C is out of reach of any recover)",
}

// callbackAPI names the library calls that keep a function and call it
// later on a goroutine of their own: pion's On* handlers (PeerConnection,
// ICE transport and agent, DTLS, data channels, tracks), go-rtmp's and
// gosrt's configuration callbacks (On*/Handle* fields), and the timers.
// net/http's ServeMux.HandleFunc is left out: net/http recovers a handler's panic
// itself and ends only that request.
var callbackAPI = regexp.MustCompile(`^((On|Handle)[A-Z]|Set\w*(Filter|Handler)$)`)

// goAPI names the calls that run a function on a goroutine of their own.
var goAPI = map[string]bool{"time.AfterFunc": true, "context.AfterFunc": true,
	"runtime.AddCleanup": true, "runtime.SetFinalizer": true}

// TestPanicBoundary enforces the panic boundary on the module's source:
// every goroutine the bridge starts and every callback it hands to a
// library must begin with `defer panics.Recover(` (after only defers and
// assignments), directly or in the one function it calls, or go through
// panics.Go. A go-rtmp Handler's On* methods run on go-rtmp's connection
// goroutine (Server.handleConn recovers nothing around OnConnect and
// OnServe, and handleMessageLoop turns a panic into a silent error), so each
// must carry its own Recover. It lists every offender as file:line.
func TestPanicBoundary(t *testing.T) {
	bad := boundaryOffenders(t, moduleRoot(t), boundaryExceptions)
	if len(bad) > 0 {
		t.Errorf("%d goroutines or library callbacks outside the panic boundary "+
			"(start them with `defer panics.Recover(component, log, endThisOne)` or use panics.Go):\n%s",
			len(bad), strings.Join(bad, "\n"))
	}
}

// boundaryOffenders lists, sorted, the offenders in the module at root and
// the exceptions that match nothing.
func boundaryOffenders(t *testing.T, root string, exceptions map[string]string) []string {
	m := loadModule(t, root)
	var bad []string
	seen := map[string]bool{}
	report := func(pos token.Pos, fn, what, why string) {
		p := m.fset.Position(pos)
		rel, _ := filepath.Rel(root, p.Filename)
		rel = filepath.ToSlash(rel)
		key := rel + " " + fn + " " + what
		for pat := range exceptions {
			if ok, _ := path.Match(pat, key); ok {
				seen[pat] = true
				return
			}
		}
		bad = append(bad, fmt.Sprintf("%s:%d: %s (in %s, exception key %q): %s", rel, p.Line, what, fn, key, why))
	}
	for _, pkg := range m.pkgs {
		for _, f := range pkg.files {
			for _, d := range f.Decls {
				fd, ok := d.(*ast.FuncDecl)
				if !ok || fd.Body == nil {
					continue
				}
				m.checkFunc(pkg, f, fd, report)
			}
		}
		m.checkRTMPHandlers(pkg, report)
	}
	for k := range exceptions {
		if !seen[k] {
			bad = append(bad, "stale exception (nothing matches it any more): "+k)
		}
	}
	sort.Strings(bad)
	return bad
}

// TestPanicBoundaryFindsOffenders runs the check on a small module with one
// instance of each rule broken and kept, so a change to the checker cannot
// quietly make it pass everything.
func TestPanicBoundaryFindsOffenders(t *testing.T) {
	root := t.TempDir()
	files := map[string]string{
		"go.mod": "module example.com/m\n\ngo 1.26\n",
		"a/a.go": `package a

import (
	"context"
	"time"

	"github.com/pion/webrtc/v4"
	gortmp "github.com/yutopp/go-rtmp"
	gosrt "github.com/datarhei/gosrt"

	"example.com/m/internal/panics"
)

type sess struct{ pc *webrtc.PeerConnection }

func (s *sess) run()  { defer panics.Recover("c", nil, s.end) }
func (s *sess) loop() {}
func (s *sess) end()  {}

func work() {}

func guardedWork() {
	defer panics.Recover("c", nil, nil)
	work()
}

func start(ctx context.Context) {
	s := &sess{}
	go s.run()
	go s.loop()
	go func() { defer panics.Recover("c", nil, nil); work() }()
	go func() { work() }()
	go guardedWork()
	go work()
	panics.Go("c", nil, work)
	s.pc.OnTrack(func(*webrtc.TrackRemote, *webrtc.RTPReceiver) { guardedWork() })
	s.pc.OnConnectionStateChange(func(webrtc.PeerConnectionState) { work() })
	time.AfterFunc(time.Second, work)
	context.AfterFunc(ctx, guardedWork)
	_ = &gortmp.ServerConfig{OnConnect: nil}
	_ = &gosrt.Server{HandleConnect: func(gosrt.ConnRequest) gosrt.ConnType { work(); return gosrt.REJECT }}
}

type handler struct{ gortmp.DefaultHandler }

func (h *handler) OnServe(*gortmp.Conn) { defer panics.Recover("c", nil, nil) }
func (h *handler) OnClose()             { work() }
`,
		"internal/panics/panics.go": "package panics\n\nfunc Recover(string, any, func()) {}\nfunc Go(string, any, func()) {}\n",
	}
	for i := 0; i < 10; i++ { // loadModule wants a module of some size
		files[fmt.Sprintf("p%d/p.go", i)] = fmt.Sprintf("package p%d\n", i)
	}
	for name, text := range files {
		p := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got := boundaryOffenders(t, root, map[string]string{"a/a.go start go work": "the test's exception", "a/a.go gone *": "stale"})
	var short []string
	for _, b := range got {
		short = append(short, strings.SplitN(b, " (", 2)[0])
	}
	want := []string{
		"a/a.go:30: go loop",
		"a/a.go:32: go func literal",
		"a/a.go:37: OnConnectionStateChange",
		"a/a.go:38: time.AfterFunc",
		"a/a.go:41: HandleConnect",
		"a/a.go:47: OnClose",
		"stale exception", // (nothing matches it any more): a/a.go gone *
	}
	if strings.Join(short, "\n") != strings.Join(want, "\n") {
		t.Errorf("offenders:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

type module struct {
	fset  *token.FileSet
	path  string // module path
	pkgs  map[string]*pkg
	funcs map[string][]*ast.FuncDecl // every function and method of the module by name
}

type pkg struct {
	dir   string // relative to the module root
	name  string
	files []*ast.File
	funcs map[string][]*ast.FuncDecl // by name, methods of every receiver together
}

func moduleRoot(t *testing.T) string {
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		up := filepath.Dir(dir)
		if up == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = up
	}
}

// skipDirs are not part of the bridge binary: test helpers and the load
// generator.
var skipDirs = map[string]bool{"internal/testkit": true, "cmd/loadtest": true}

func loadModule(t *testing.T, root string) *module {
	gomod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	mp := regexp.MustCompile(`(?m)^module\s+(\S+)`).FindSubmatch(gomod)
	if mp == nil {
		t.Fatal("go.mod has no module line")
	}
	m := &module{fset: token.NewFileSet(), path: string(mp[1]), pkgs: map[string]*pkg{}, funcs: map[string][]*ast.FuncDecl{}}
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if rel != "." && (strings.HasPrefix(d.Name(), ".") || strings.HasPrefix(d.Name(), "_") ||
				d.Name() == "testdata" || skipDirs[rel]) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(m.fset, p, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		dir := filepath.ToSlash(filepath.Dir(rel))
		pk := m.pkgs[dir]
		if pk == nil {
			pk = &pkg{dir: dir, name: f.Name.Name, funcs: map[string][]*ast.FuncDecl{}}
			m.pkgs[dir] = pk
		}
		pk.files = append(pk.files, f)
		for _, d := range f.Decls {
			if fd, ok := d.(*ast.FuncDecl); ok && fd.Body != nil {
				pk.funcs[fd.Name.Name] = append(pk.funcs[fd.Name.Name], fd)
				m.funcs[fd.Name.Name] = append(m.funcs[fd.Name.Name], fd)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(m.pkgs) < 10 {
		t.Fatalf("found only %d packages under %s: the walk is broken", len(m.pkgs), root)
	}
	return m
}

// imports maps a file's package names to import paths.
func imports(f *ast.File) map[string]string {
	out := map[string]string{}
	for _, is := range f.Imports {
		p := strings.Trim(is.Path.Value, `"`)
		name := p[strings.LastIndex(p, "/")+1:]
		if is.Name != nil {
			name = is.Name.Name
		} else if regexp.MustCompile(`^v[0-9]+$`).MatchString(name) {
			q := strings.TrimSuffix(p, "/"+name)
			name = q[strings.LastIndex(q, "/")+1:]
		}
		out[name] = p
	}
	return out
}

// isRecover reports whether s is `defer panics.Recover(...)` (or
// `defer Recover(...)` inside package panics).
func isRecover(pk *pkg, s ast.Stmt) bool {
	d, ok := s.(*ast.DeferStmt)
	if !ok {
		return false
	}
	switch fn := d.Call.Fun.(type) {
	case *ast.SelectorExpr:
		x, ok := fn.X.(*ast.Ident)
		return ok && x.Name == "panics" && fn.Sel.Name == "Recover"
	case *ast.Ident:
		return pk.name == "panics" && fn.Name == "Recover"
	}
	return false
}

// guarded reports whether body begins with a Recover: only defers,
// assignments and declarations may come before it.
func guarded(pk *pkg, body *ast.BlockStmt) bool {
	if body == nil {
		return false
	}
	for _, s := range body.List {
		if isRecover(pk, s) {
			return true
		}
		switch s.(type) {
		case *ast.DeferStmt, *ast.AssignStmt, *ast.DeclStmt:
			continue
		}
		return false
	}
	return false
}

// scope is where a function value is named: its package and file, and the
// type names known for local variables (the receiver, x := &T{...}), so
// x.m resolves to T's method m when x is one of them.
type scope struct {
	pk   *pkg
	f    *ast.File
	vars map[string]string
}

func newScope(pk *pkg, f *ast.File, fd *ast.FuncDecl) scope {
	sc := scope{pk: pk, f: f, vars: map[string]string{}}
	if fd.Recv != nil && len(fd.Recv.List[0].Names) == 1 {
		sc.vars[fd.Recv.List[0].Names[0].Name] = typeName(fd.Recv.List[0].Type)
	}
	ast.Inspect(fd.Body, func(n ast.Node) bool {
		as, ok := n.(*ast.AssignStmt)
		if !ok {
			return true
		}
		if len(as.Rhs) == 1 && len(as.Lhs) > 1 {
			// x, err := newT(...): the types of a package function's results.
			if call, ok := as.Rhs[0].(*ast.CallExpr); ok {
				if id, ok := call.Fun.(*ast.Ident); ok && len(pk.funcs[id.Name]) == 1 {
					if res := pk.funcs[id.Name][0].Type.Results; res != nil {
						var types []string
						for _, fl := range res.List {
							for range max(1, len(fl.Names)) {
								types = append(types, typeName(fl.Type))
							}
						}
						for i, l := range as.Lhs {
							if id, ok := l.(*ast.Ident); ok && i < len(types) && types[i] != "" {
								sc.vars[id.Name] = types[i]
							}
						}
					}
				}
			}
			return true
		}
		if len(as.Lhs) != len(as.Rhs) {
			return true
		}
		for i, l := range as.Lhs {
			id, ok := l.(*ast.Ident)
			if !ok {
				continue
			}
			r := as.Rhs[i]
			if u, ok := r.(*ast.UnaryExpr); ok && u.Op == token.AND {
				r = u.X
			}
			if cl, ok := r.(*ast.CompositeLit); ok {
				if tn := typeName(cl.Type); tn != "" {
					sc.vars[id.Name] = tn
				}
			}
		}
		return true
	})
	return sc
}

// typeName is T for T, *T and T[...] written in this package, else "".
func typeName(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.StarExpr:
		return typeName(e.X)
	case *ast.Ident:
		return e.Name
	case *ast.IndexExpr:
		return typeName(e.X)
	case *ast.IndexListExpr:
		return typeName(e.X)
	}
	return ""
}

func recvName(fd *ast.FuncDecl) string {
	if fd.Recv == nil {
		return ""
	}
	return typeName(fd.Recv.List[0].Type)
}

// underDo reports whether body is `panics.Do(...)` (or panics.Go)
// followed only by returns that call nothing: all its work runs under the
// boundary.
func underDo(body *ast.BlockStmt) bool {
	if len(body.List) == 0 {
		return false
	}
	es, ok := body.List[0].(*ast.ExprStmt)
	if !ok {
		return false
	}
	call, ok := es.X.(*ast.CallExpr)
	if !ok {
		return false
	}
	sel, ok := call.Fun.(*ast.SelectorExpr)
	if !ok {
		return false
	}
	if x, ok := sel.X.(*ast.Ident); !ok || x.Name != "panics" || (sel.Sel.Name != "Do" && sel.Sel.Name != "Go") {
		return false
	}
	for _, s := range body.List[1:] {
		r, ok := s.(*ast.ReturnStmt)
		if !ok {
			return false
		}
		for _, e := range r.Results {
			switch e.(type) {
			case *ast.Ident, *ast.BasicLit:
			default:
				return false
			}
		}
	}
	return true
}

// resolve finds the module's function declarations an expression naming a
// function may refer to: f, pkg.F (a module package) or x.m (the method m
// of x's type when the scope knows it, else any method m, in this package
// first, else in the module). It returns nil when the target is outside
// the module or is not a named function.
func (m *module) resolve(sc scope, e ast.Expr) (decls []*ast.FuncDecl, owner *pkg) {
	pk := sc.pk
	switch e := e.(type) {
	case *ast.Ident:
		var out []*ast.FuncDecl
		for _, d := range pk.funcs[e.Name] {
			if d.Recv == nil {
				out = append(out, d)
			}
		}
		return out, pk
	case *ast.SelectorExpr:
		if x, ok := e.X.(*ast.Ident); ok {
			if p, ok := imports(sc.f)[x.Name]; ok {
				if !strings.HasPrefix(p, m.path+"/") {
					return nil, nil
				}
				if op := m.pkgs[strings.TrimPrefix(p, m.path+"/")]; op != nil {
					return op.funcs[e.Sel.Name], op
				}
				return nil, nil
			}
			if tn := sc.vars[x.Name]; tn != "" {
				var out []*ast.FuncDecl
				for _, d := range pk.funcs[e.Sel.Name] {
					if recvName(d) == tn {
						out = append(out, d)
					}
				}
				if len(out) > 0 {
					return out, pk
				}
			}
		}
		if ds := pk.funcs[e.Sel.Name]; len(ds) > 0 {
			return ds, pk
		}
		ds := m.funcs[e.Sel.Name]
		if len(ds) == 0 {
			return nil, nil
		}
		return ds, m.pkgOf(ds[0])
	}
	return nil, nil
}

func (m *module) pkgOf(fd *ast.FuncDecl) *pkg {
	for _, p := range m.pkgs {
		for _, f := range p.files {
			if f.Pos() <= fd.Pos() && fd.End() <= f.End() && m.fset.File(f.Pos()) == m.fset.File(fd.Pos()) {
				return p
			}
		}
	}
	return nil
}

// safeFunc reports whether the function value e runs under a Recover: a
// literal that begins with one or whose body is one call to a function
// that does, or a named function or method value that does (every
// declaration of that name, since the receiver is not resolved).
func (m *module) safeFunc(sc scope, e ast.Expr) bool {
	if lit, ok := e.(*ast.FuncLit); ok {
		if guarded(sc.pk, lit.Body) || underDo(lit.Body) {
			return true
		}
		if len(lit.Body.List) != 1 {
			return false
		}
		var call *ast.CallExpr
		switch s := lit.Body.List[0].(type) {
		case *ast.ExprStmt:
			call, _ = s.X.(*ast.CallExpr)
		case *ast.ReturnStmt:
			if len(s.Results) == 1 {
				call, _ = s.Results[0].(*ast.CallExpr)
			}
		}
		return call != nil && m.safeNamed(sc, call.Fun)
	}
	return m.safeNamed(sc, e)
}

func (m *module) safeNamed(sc scope, e ast.Expr) bool {
	decls, owner := m.resolve(sc, e)
	if len(decls) == 0 {
		return false
	}
	for _, d := range decls {
		if !guarded(owner, d.Body) {
			return false
		}
	}
	return true
}

// isFuncValue reports whether e is a function literal or names one of the
// module's functions (a callback argument, not data).
func (m *module) isFuncValue(sc scope, e ast.Expr) bool {
	if _, ok := e.(*ast.FuncLit); ok {
		return true
	}
	decls, _ := m.resolve(sc, e)
	return len(decls) > 0
}

func calleeName(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.Ident:
		return e.Name
	case *ast.SelectorExpr:
		if x, ok := e.X.(*ast.Ident); ok && (x.Name == "time" || x.Name == "context" || x.Name == "runtime") {
			return x.Name + "." + e.Sel.Name
		}
		return e.Sel.Name
	case *ast.FuncLit:
		return "func literal"
	}
	return fmt.Sprintf("%T", e)
}

type reportFunc func(pos token.Pos, fn, what, why string)

func (m *module) checkFunc(pk *pkg, f *ast.File, fd *ast.FuncDecl, report reportFunc) {
	fn := fd.Name.Name
	sc := newScope(pk, f, fd)
	ast.Inspect(fd.Body, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.GoStmt:
			if !m.safeFunc(sc, n.Call.Fun) {
				report(n.Pos(), fn, "go "+calleeName(n.Call.Fun),
					"goroutine does not begin with defer panics.Recover")
			}
		case *ast.CallExpr:
			name := calleeName(n.Fun)
			var cbs []ast.Expr
			switch {
			case goAPI[name]:
				if len(n.Args) >= 2 {
					cbs = append(cbs, n.Args[1])
				}
			case callbackAPI.MatchString(name) && name != "HandleFunc":
				if _, ok := n.Fun.(*ast.SelectorExpr); !ok {
					break
				}
				for _, a := range n.Args {
					if m.isFuncValue(sc, a) {
						cbs = append(cbs, a)
					}
				}
			}
			for _, cb := range cbs {
				if !m.safeFunc(sc, cb) {
					report(cb.Pos(), fn, name, "callback does not begin with defer panics.Recover")
				}
			}
		case *ast.CompositeLit:
			// Only a library's configuration: the module's own callback
			// fields are called from goroutines this test checks.
			sel, ok := n.Type.(*ast.SelectorExpr)
			if !ok {
				break
			}
			if x, ok := sel.X.(*ast.Ident); !ok || strings.HasPrefix(imports(f)[x.Name], m.path+"/") {
				break
			}
			for _, el := range n.Elts {
				kv, ok := el.(*ast.KeyValueExpr)
				if !ok {
					continue
				}
				if k, ok := kv.Key.(*ast.Ident); ok && callbackAPI.MatchString(k.Name) && m.isFuncValue(sc, kv.Value) &&
					!m.safeFunc(sc, kv.Value) {
					report(kv.Value.Pos(), fn, k.Name, "callback field does not begin with defer panics.Recover")
				}
			}
		case *ast.AssignStmt:
			for i, l := range n.Lhs {
				s, ok := l.(*ast.SelectorExpr)
				if !ok || i >= len(n.Rhs) || !callbackAPI.MatchString(s.Sel.Name) {
					continue
				}
				if m.isFuncValue(sc, n.Rhs[i]) && !m.safeFunc(sc, n.Rhs[i]) {
					report(n.Rhs[i].Pos(), fn, s.Sel.Name, "callback field does not begin with defer panics.Recover")
				}
			}
		}
		return true
	})
}

// checkRTMPHandlers requires a Recover in every On* method of each type
// that embeds go-rtmp's DefaultHandler (an rtmp.Handler implementation):
// go-rtmp calls them on its connection goroutine.
func (m *module) checkRTMPHandlers(pk *pkg, report reportFunc) {
	handlers := map[string]bool{}
	for _, f := range pk.files {
		rtmpName := ""
		for name, p := range imports(f) {
			if p == "github.com/yutopp/go-rtmp" {
				rtmpName = name
			}
		}
		if rtmpName == "" {
			continue
		}
		ast.Inspect(f, func(n ast.Node) bool {
			ts, ok := n.(*ast.TypeSpec)
			if !ok {
				return true
			}
			st, ok := ts.Type.(*ast.StructType)
			if !ok {
				return true
			}
			for _, fl := range st.Fields.List {
				typ := fl.Type
				if s, ok := typ.(*ast.StarExpr); ok {
					typ = s.X
				}
				if s, ok := typ.(*ast.SelectorExpr); ok && len(fl.Names) == 0 && s.Sel.Name == "DefaultHandler" {
					if x, ok := s.X.(*ast.Ident); ok && x.Name == rtmpName {
						handlers[ts.Name.Name] = true
					}
				}
			}
			return true
		})
	}
	for _, f := range pk.files {
		for _, d := range f.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok || fd.Recv == nil || fd.Body == nil || !strings.HasPrefix(fd.Name.Name, "On") {
				continue
			}
			typ := fd.Recv.List[0].Type
			if s, ok := typ.(*ast.StarExpr); ok {
				typ = s.X
			}
			if id, ok := typ.(*ast.Ident); ok && handlers[id.Name] && !guarded(pk, fd.Body) {
				report(fd.Pos(), id.Name, fd.Name.Name, "go-rtmp handler method does not begin with defer panics.Recover")
			}
		}
	}
}
