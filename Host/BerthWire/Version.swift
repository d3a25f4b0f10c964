// The Berth release: the one version constant, printed by `berthd --version` and `berth --version`.
public enum BerthVersion {
    public static let current = "0.1.0"
}
