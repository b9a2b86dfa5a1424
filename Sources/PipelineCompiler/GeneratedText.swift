import PipelineSpec

/// Names and paths written into generated files and into the plan shown on a terminal.
public enum GeneratedText {
    /// Text for a `--` (SQL) or `//` (Swift) comment line, or a line of `pipectl plan`: every
    /// control character and line break escaped, so nothing in it can end the comment and start
    /// a statement (`k\rDROP TABLE canary2; --` once did under psql) or drive the terminal.
    /// Validation already refuses such names; this holds even for a path given on the command line.
    public static func comment(_ text: String) -> String { Excerpt.escaped(text) }
}
